use cache_core::cached;

#[cached(cache_none = false)]
fn f(id: u32) -> u32 {
    id
}

fn main() {}
