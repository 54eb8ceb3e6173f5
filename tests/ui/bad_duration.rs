use cache_core::cached;

#[cached(ttl = "5 parsecs")]
fn f(x: u32) -> u32 {
    x
}

#[cached(sliding = "0s")]
fn g(x: u32) -> u32 {
    x
}

fn main() {}
