//! One module per subcommand.
pub mod devices;
pub mod generate;
pub mod generate_llama;
pub mod probe;
pub mod report;
pub mod run;
pub mod score;
pub mod virtual_device;
