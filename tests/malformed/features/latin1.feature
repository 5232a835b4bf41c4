Feature: Übung
  Scenario: s
    Given the embedded lab is up
