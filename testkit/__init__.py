"""What the tests and the benchmarks share to drive the real thing: the plugin services as child
processes, and dockerd through its CLI. Not part of the product (not installed, never imported
by common/, ipam/, netdriver/ or routedctl/)."""
