//! placeholder until the macros land
