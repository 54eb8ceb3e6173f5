use cache_core::{cached, invalidates};

trait Source {
    fn load(&self, id: u32) -> u32;
}

struct Repo;

impl Source for Repo {
    // no companions can be added in a trait impl
    #[cached(companions = false)]
    fn load(&self, id: u32) -> u32 {
        id
    }
}

impl Repo {
    #[invalidates(Self::load(id))]
    fn save(&self, id: u32) {}
}

fn main() {}
