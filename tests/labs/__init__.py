"""Labs that exist only to test the lab framework, built from its public API alone."""
