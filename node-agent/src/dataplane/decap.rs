//! Placeholder: being written (real-side decapsulation program).
