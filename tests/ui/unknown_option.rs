use cache_core::cached;

#[cached(tll = "5m")]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
