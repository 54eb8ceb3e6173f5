use cache_core::{cached, write_behind};

#[cached(ttl = "1m")]
fn get_counter(id: u64) -> u64 {
    id
}

// `value` names no parameter
#[write_behind(get_counter(id), value = count)]
fn a(id: u64, value: u64) {}

// the body's return is neither `()` nor `Result<(), E>`
#[write_behind(get_counter(id), value = v)]
fn b(id: u64, v: u64) -> u64 {
    v
}

// nor `Result<T, E>` with a `T` other than `()`
#[write_behind(get_counter(id), value = v)]
fn c(id: u64, v: u64) -> Result<u64, String> {
    Ok(v)
}

// arguments are queued: they must be owned
#[write_behind(get_counter(*id), value = v)]
fn d(id: &u64, v: u64) {}

// no target
#[write_behind(value = v)]
fn e(id: u64, v: u64) {}

// an unknown option
#[write_behind(get_counter(id), value = v, flush_every = "1s")]
fn f(id: u64, v: u64) {}

// max_attempts is at least 1
#[write_behind(get_counter(id), value = v, max_attempts = 0)]
fn g(id: u64, v: u64) {}

fn main() {}
