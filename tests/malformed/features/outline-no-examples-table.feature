Feature: f
  Scenario Outline: s
    Given the gate "<gate>" is approved for the lab
    Examples:
      | gate |
      | a | b |
