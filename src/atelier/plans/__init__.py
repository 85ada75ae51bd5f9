"""Plans and their limits, and usage metered per organization, per meter, per month.

`check` refuses work over a plan limit (402, naming the meter, the limit and the usage) and
`record` adds usage. Organizations are known here by id only; `identity` assigns plans.
"""
