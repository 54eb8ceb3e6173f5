use cache_core::cached;

struct Db;

// a dependency must follow from the key
#[cached(skip(db), depends_on = ["db:{db}"])]
fn f(db: &Db, id: u32) -> u32 {
    let _ = db;
    id
}

fn main() {}
