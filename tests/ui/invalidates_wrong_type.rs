use cache_core::{cached, invalidates};

#[cached(skip(db))]
fn get_user(db: &str, id: u64) -> String {
    format!("{db}{id}")
}

#[invalidates(get_user(name))]
fn rename(id: u64, name: &str) {
    let _ = id;
}

fn main() {}
