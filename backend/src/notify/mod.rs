//! The DLR FL Demonstrator notification endpoint, the trainings it feeds,
//! and the runner of the local training command.
