use cache_core::KeyPart;

#[derive(KeyPart)]
union U {
    a: u32,
}

#[derive(KeyPart)]
struct S {
    #[key_part(ignore)]
    a: u32,
}

struct NoKey;

#[derive(KeyPart)]
struct HasNoKey {
    a: NoKey,
}

fn main() {}
