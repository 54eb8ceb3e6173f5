use cache_core::cached;

#[cached(depends_on = ["user:{user_id}"])]
fn f(id: u32) -> u32 {
    id
}

#[cached(key = "team:{team.id}")]
fn g(id: u32) -> u32 {
    id
}

fn main() {}
