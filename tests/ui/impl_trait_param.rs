use cache_core::cached;

#[cached]
fn f(log: impl Fn(&str), id: u32) -> u32 {
    log("x");
    id
}

fn main() {}
