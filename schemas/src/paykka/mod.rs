//! PayKKa v1.2 wire types (requests, responses, notifications, enums).
