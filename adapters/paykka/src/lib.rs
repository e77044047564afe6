//! PayKKa v1.2 adapter (signing comes next).
