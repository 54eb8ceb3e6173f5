use cache_core::cached;

// `local` is a flag
#[cached(local = true)]
fn a(x: u32) -> u32 {
    x
}

// not on batch fns yet
#[cached(local, batch(ids))]
fn b(ids: Vec<u32>) -> std::collections::HashMap<u32, u32> {
    ids.into_iter().map(|i| (i, i)).collect()
}

fn main() {}
