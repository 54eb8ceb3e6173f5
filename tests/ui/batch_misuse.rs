use std::collections::{BTreeMap, HashMap};

use cache_core::cached;

// names no parameter
#[cached(batch(idz))]
fn a(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|i| (i, i.to_string())).collect()
}

// not a collection
#[cached(batch(id))]
fn b(id: u64) -> HashMap<u64, String> {
    HashMap::from([(id, id.to_string())])
}

// a map keyed by another type
#[cached(batch(ids))]
fn c(ids: Vec<u64>) -> BTreeMap<String, String> {
    ids.into_iter().map(|i| (i.to_string(), i.to_string())).collect()
}

// not a map
#[cached(batch(ids))]
fn d(ids: &[u64]) -> Vec<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

// skipped
#[cached(batch(ids), skip(ids))]
fn e(ids: Vec<u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|i| (i, i)).collect()
}

fn main() {}
