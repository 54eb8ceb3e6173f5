use cache_core::cached;

#[cached]
const fn f(x: u32) -> u32 {
    x
}

fn main() {}
