"""The auth domain of the api."""
