use cache_core::cached;

#[cached(jitter = "5s")]
fn f(x: u32) -> u32 {
    x
}

#[cached(ttl = "1m", jitter = "soon")]
fn g(x: u32) -> u32 {
    x
}

fn main() {}
