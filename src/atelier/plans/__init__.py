"""Plans and their limits, and usage metered per organization, per meter, per month.

`check` refuses work over a plan limit (402, naming the meter, the limit and the usage) and
`record` adds usage. `check_orgs_owned` bounds the organizations a user owns by the plans of
those they own; `trial_end` and `trial_days_left` date a trial. Organizations are known here by
id only; `identity` assigns plans and ends trials.
"""
