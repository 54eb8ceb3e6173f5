use cache_core::cached;

// a value that cannot be serialized: the error shows `#[cached(local)]`
#[derive(Clone)]
struct Handle(std::sync::Arc<dyn Fn() + Send + Sync>);

#[cached]
fn handle(x: u32) -> Handle {
    let _ = x;
    Handle(std::sync::Arc::new(|| {}))
}

fn main() {}
