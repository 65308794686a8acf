//! Specifications of the episode rules, read as behaviours; fixtures build valid commands
//! so each test changes only what it is about.

mod fixtures;
mod payloads;
mod properties;
mod rules;
