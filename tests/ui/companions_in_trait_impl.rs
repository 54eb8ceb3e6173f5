use cache_core::cached;

trait Source {
    fn load(&self, id: u32) -> u32;
}

struct Repo;

impl Source for Repo {
    // forgot `companions = false`
    #[cached]
    fn load(&self, id: u32) -> u32 {
        id
    }
}

fn main() {}
