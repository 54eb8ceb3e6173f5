use cache_core::cached;

struct Db;

// no ttl to be stale after
#[cached(stale_while_revalidate = "30s")]
fn a(x: u32) -> u32 {
    x
}

// a timeout needs a stale value to return
#[cached(ttl = "1m", timeout = "200ms")]
fn b(x: u32) -> Result<u32, String> {
    Ok(x)
}

// stale_if_error stands in for an Err
#[cached(ttl = "1m", stale_if_error = "1h")]
fn c(x: u32) -> u32 {
    x
}

// refresh_ahead must be shorter than ttl
#[cached(ttl = "10s", refresh_ahead = "10s")]
fn d(x: u32) -> u32 {
    x
}

// a background refresh cannot borrow its arguments
#[cached(ttl = "1m", stale_while_revalidate = "30s", skip(db))]
fn e(db: &Db, x: u32) -> u32 {
    let _ = db;
    x
}

fn main() {}
