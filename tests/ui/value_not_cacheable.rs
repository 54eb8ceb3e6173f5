use cache_core::cached;

struct NotSerializable;

#[cached]
fn f(id: u32) -> Option<NotSerializable> {
    let _ = id;
    None
}

fn main() {}
