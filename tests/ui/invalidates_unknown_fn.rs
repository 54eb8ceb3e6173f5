use cache_core::{cached, invalidates};

#[cached]
fn get_user(id: u64) -> String {
    id.to_string()
}

fn plain(id: u64) -> u64 {
    id
}

#[invalidates(get_usr(id))]
fn rename(id: u64) {}

// not cached: it has no companions
#[invalidates(plain(id))]
fn touch(id: u64) {}

fn main() {}
