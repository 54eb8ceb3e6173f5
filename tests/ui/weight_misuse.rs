use cache_core::cached;

// `weight` takes a path to a fn
#[cached(weight = 64)]
fn a(x: u32) -> u32 {
    x
}

fn by_len(v: &Vec<u8>) -> usize {
    v.len()
}

// not on batch fns yet
#[cached(batch(ids), weight = by_len)]
fn b(ids: Vec<u32>) -> std::collections::HashMap<u32, Vec<u8>> {
    ids.into_iter().map(|i| (i, vec![0; i as usize])).collect()
}

fn main() {}
