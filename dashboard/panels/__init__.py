"""One module per panel of the page: each turns replies of the contract into figures, tables and
cards, and knows nothing of Dash callbacks or of the client."""
