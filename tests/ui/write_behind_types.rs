use cache_core::{cached, write_behind};

#[cached(ttl = "1m")]
fn get_counter(id: u64) -> u64 {
    id
}

// the value's type is not the target's
#[write_behind(get_counter(id), value = label)]
fn save_label(id: u64, label: String) {}

// the target is not a cached fn
#[write_behind(get_count(id), value = v)]
fn save(id: u64, v: u64) {}

// the error type must be Debug (it is kept with a failed write)
struct NotDebug;

#[write_behind(get_counter(id), value = v)]
fn save_opaque(id: u64, v: u64) -> Result<(), NotDebug> {
    Ok(())
}

fn main() {}
