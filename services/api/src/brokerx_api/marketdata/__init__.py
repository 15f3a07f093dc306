"""The marketdata domain of the api."""
