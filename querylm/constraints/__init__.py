"""Where clauses → per-hole constraints: a grammar for the token-mask engine (llguidance), stop phrases,
token budgets and final-value checks."""
