//! Specifications of the read models, read as behaviours; fixtures build valid events so
//! each test states only what it is about.

mod casemix;
mod fixtures;
mod outcomes;
mod plan;
mod properties;
mod release;
mod statistics;
mod tally;
