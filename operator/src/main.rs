//! weir-operator (being written, issue #4).
fn main() {}
