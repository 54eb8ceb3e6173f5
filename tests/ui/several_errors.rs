use cache_core::cached;

// every problem of the attribute is reported at once, each at its token
#[cached(ttl = "5", lock = 1, skip(nope), depends_on = ["user:{idd}"], frobnicate)]
fn f(id: u32) -> u32 {
    id
}

fn main() {}
