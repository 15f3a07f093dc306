"""The orders domain of the api."""
