use cache_core::{cache_put, cached, invalidates};

#[cached]
struct S;

#[invalidates(f(1))]
const C: u32 = 1;

#[cache_put(f(1))]
enum E {}

trait T {
    #[cached]
    fn no_body(&self) -> u32;
}

fn main() {}
