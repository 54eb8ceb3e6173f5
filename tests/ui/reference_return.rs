use cache_core::cached;

#[cached]
fn f(id: u32) -> &'static str {
    let _ = id;
    "x"
}

#[cached]
fn g(id: u32) -> Result<Vec<&'static str>, String> {
    Ok(vec!["x"; id as usize])
}

fn main() {}
