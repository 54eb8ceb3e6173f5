use cache_core::cached;

struct Db;

#[cached]
fn f(db: &Db, id: u32) -> u32 {
    let _ = db;
    id
}

fn main() {}
