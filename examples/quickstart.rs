//! Quickstart (placeholder until the macros land).
fn main() {
    println!("quickstart");
}
