//! One module per subcommand: its arguments (clap) and the call into the library that does it.

pub mod backend;
pub mod capacity;
pub mod check;
pub mod demo;
pub mod grpc;
pub mod load;
pub mod logging;
pub mod register;
pub mod replay;
pub mod run;
pub mod top;
