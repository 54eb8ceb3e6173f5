use cache_core::invalidates;

#[invalidates(dependencies = "user:{id}", before = 1, after = true, 42)]
fn rename(id: u64) {
    let _ = id;
}

#[invalidates(dependencies = ["user:{uid}"])]
fn other(id: u64) {
    let _ = id;
}

fn main() {}
