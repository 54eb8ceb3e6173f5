use cache_core::{cached, invalidates};

#[cached]
fn get_user(id: u64) -> String {
    id.to_string()
}

#[invalidates(get_user(id, name))]
fn rename(id: u64, name: String) {
    let _ = name;
}

#[invalidates(get_user())]
fn touch(id: u64) {
    let _ = id;
}

fn main() {}
