"""Sub-LLM calls: backends behind one interface, and the router that budgets, limits, retries and caches."""
