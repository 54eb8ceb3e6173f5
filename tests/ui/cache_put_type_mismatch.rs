use cache_core::{cache_put, cached};

#[cached]
fn get_user(id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

#[cache_put(get_user(id))]
fn save_user(id: u64) -> Result<u64, ()> {
    Ok(id)
}

#[cache_put(get_user(..))]
fn save_all(id: u64) -> Result<String, ()> {
    Ok(id.to_string())
}

fn main() {}
