"""The stream domain of the api."""
