"""The clients domain of the api."""
