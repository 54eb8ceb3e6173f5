use cache_core::cached;

#[cached]
fn f(id: u32) -> impl std::fmt::Display {
    id
}

fn main() {}
