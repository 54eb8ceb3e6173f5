use cache_core::cached;

struct Repo;

impl Repo {
    #[cached(include_self)]
    fn f(&self, id: u32) -> u32 {
        id
    }
}

#[cached(include_self)]
fn free(id: u32) -> u32 {
    id
}

fn main() {}
