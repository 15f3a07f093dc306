"""The accounts domain of the api."""
