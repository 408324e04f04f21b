"""The seed project's recipe as a Flower App (ServerApp + ClientApp), for end_to_end.py."""
