use cache_core::{cached, KeyPart};

#[derive(KeyPart)]
struct User {
    id: u64,
}

// field access is checked by the compiler, at the template
#[cached(depends_on = ["team:{user.team}"])]
fn f(user: User) -> u64 {
    user.id
}

fn main() {}
