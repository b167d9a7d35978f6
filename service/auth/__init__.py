"""Login, registration and logout."""
